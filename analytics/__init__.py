"""Pure (sans-I/O) analytics cores: fed events and a clock, they say what happened.
The exchange drives them live on each channel's ordered events (stream highlights,
stream sessions); command-line tools drive the very same code on what they read
elsewhere (`chatd highlights watch`, `chatd sessions backfill`)."""
