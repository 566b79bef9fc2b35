"""Pydantic wire schemas: XRequest/XResponse for actions, XCreate/XRead for resources."""
