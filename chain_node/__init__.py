"""Long-running chain services: the REE inference node and the MPC feature-share node."""
