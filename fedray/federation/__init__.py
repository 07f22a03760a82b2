"""The only Ray code on the training path: hospital and driver actors, and one experiment's lifecycle."""
