"""Procedural training / benchmark data: the captioned shapes world and its independent checker."""
