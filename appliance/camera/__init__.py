"""The camera process: every enabled camera's capture and inspection loop, shared models, events handed off."""
