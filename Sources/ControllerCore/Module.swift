/// ControllerCore: the engine (see Engine.swift).
