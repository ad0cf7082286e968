"""Streamlit pages (layout only); queries and logic live in t2i/ where tests reach them."""
