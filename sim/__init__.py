"""The user simulator and its world generator."""
