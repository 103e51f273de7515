"""camexp."""
