"""Reusable layers: field embeddings, MLP, cross networks, factorisation machines."""
