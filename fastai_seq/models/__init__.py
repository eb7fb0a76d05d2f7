"Bundled model families; importing this module registers their archs"
