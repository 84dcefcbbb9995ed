"""Training and evaluation (MONAI networks) on shared data and on user-brought labels."""
