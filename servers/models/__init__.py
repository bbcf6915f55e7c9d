"""The models server: pulls model files by reference into the folders the Text, Image and Video
servers read, deletes them, prunes partial downloads. Loads no model: no torch, no llama.cpp, no GPU."""
