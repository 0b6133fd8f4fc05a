"""Circuit relay v2: hop server, reservation client, stop handler, auto-relay."""
