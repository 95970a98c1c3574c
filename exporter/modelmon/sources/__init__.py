"""Event sources: each turns something it observes into events for the pipeline."""
