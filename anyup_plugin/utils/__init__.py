"""Helpers shared by the tools: feature visualisation."""
