/// KubernetesAPI: a client of the Kubernetes API server (configuration, typed resources, watches,
/// status writes, leases). It knows nothing of che-backup's engine.
///
/// Terms:
/// - `JSON`: objects are read, changed and written as JSON values, so fields this client does
///   not know survive a round trip; typed models decode from them.
/// - `KubeResource`: a kind and where it is served (group, version, plural, namespaced).
/// - `KubeConfig`: the server, its CA and the credentials, from a pod's service account or a
///   kubeconfig. TLS is verified unless a kubeconfig explicitly says otherwise.
/// - `KubeClient`: requests over libcurl (Storage's `CurlTransport`) on the client's own threads:
///   get, list, create, replace (409 on a stale resourceVersion), patch, delete, `updateStatus`
///   (only through `/status`, re-read and re-applied on conflicts), `scale`, and `watch`
///   (list then watch, resumed across broken streams, restarts and expired histories, each
///   object version emitted once). Bearer tokens are sent per request and never logged or put
///   in an error.
/// - `KubeError`: every failure, with an opaque code, the HTTP status and Kubernetes' reason.
/// - `LeaderElection`: one leader among replicas on a Lease, client-go's rules.
