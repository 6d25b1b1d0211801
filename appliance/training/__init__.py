"""Training on the box: snapshot, training child process, job kind "train", API."""
