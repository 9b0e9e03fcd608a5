/// KubernetesAPI: a client of the Kubernetes API server (configuration, typed resources, watches,
/// status writes, leases). It knows nothing of che-backup's engine.
