/// Kubernetes: the engine's protocols over the Kubernetes API.
