"""The served image: the export, its backings and ExportSpec (what to serve, and how)."""
