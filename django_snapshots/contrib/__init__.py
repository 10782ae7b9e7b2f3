"""Integrations with other Django apps, each optional and imported only when used."""
