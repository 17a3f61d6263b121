"""Built-in queries and system-prompt templates (our own text), and loaders for public query formats."""

from valuemech.data.queries import Query, builtin_queries, load_queries, select_queries
from valuemech.data.templates import builtin_templates, load_templates

__all__ = ["Query", "builtin_queries", "builtin_templates", "load_queries", "load_templates",
           "select_queries"]
