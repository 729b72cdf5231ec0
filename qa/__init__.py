"""Cited question answering over documents about CICA security cooperation."""
