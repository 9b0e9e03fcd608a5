/// LocalMode: the engine's protocols over files.
