"""What a finished job becomes: the GIF and the PNG with its parameters (render), in AUTOMATIC1111's
infotext form (infotext)."""
