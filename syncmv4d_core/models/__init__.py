"""Networks: the multi-view joint diffusion transformer (MJD) and the points aligner (DPA)."""
