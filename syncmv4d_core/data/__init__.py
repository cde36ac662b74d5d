"""Data sources that produce Scenes: procedural synthetic scenes and the TACO reader."""
