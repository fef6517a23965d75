"""The MPC feature-share node and dealer services and a node's store."""
