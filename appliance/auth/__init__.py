"""Users, passwords, tokens and who may do what."""
