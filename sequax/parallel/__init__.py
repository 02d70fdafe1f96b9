"""Device meshes and (later) sequence-parallel mixers."""
