"""The `svimo` Ray Serve application (`serve run serve.app:svimo`); built in the serving issue."""
