"""Robot descriptions from ``robots/<model>/``: URDF plus controller settings."""
