"""Pictures and tables: heatmap overlays, grids, leaderboards."""
