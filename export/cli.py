"""`alignlearn export | encode | bench`: registered on the core's CLI app."""
