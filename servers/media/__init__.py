"""Media codecs shared by every service: still images (``images``) and animations (``video``).

Pure Python on Pillow (and PyAV for MP4); no torch, no grpc. Decoding is hostile-input handling:
sizes are checked before pixels are decoded, and every rejection names the request field.
"""
