"""The offline HTML report: figures, findings, pages."""
