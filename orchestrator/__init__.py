"""What people run: compile and deploy, models, enclaves, requests, audit, the CLI."""
