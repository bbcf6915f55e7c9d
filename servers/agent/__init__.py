"""The Agent server: chains the Text, Image and Video services into one job (a character: sheet,
portrait, animation), as their gRPC client. Needs no GPU."""
