"""The trainer: a separate program that talks to the controller only through artifacts."""
