"""One module per page of the studio window."""
