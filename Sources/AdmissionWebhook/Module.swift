/// AdmissionWebhook: the agent sidecar injected into Che's pods at admission time, as Istio,
/// Linkerd and Vault's agent injector do, so that the Che operator's reconciliation of its
/// Deployments does not undo it.
///
/// Terms: a pod *asks* for an agent with the label `chebackup.eclipse.org/inject` = `postgres`
/// or `files`; `SidecarInjector` turns such a pod (or a workload's pod template) into a list of
/// JSONPatch operations (RFC 6902) that add the agent container, its token volume and the label
/// `chebackup.eclipse.org/agent` by which Kubernetes mode finds it. `AdmissionReviewHandler`
/// answers `admission.k8s.io/v1` AdmissionReviews with that patch; `WebhookServer` serves it over
/// TLS at `/inject`; `ManifestInjector` applies the same change to Deployment, StatefulSet and
/// Pod manifests (`chebackup inject -f`). `CertificateAuthority` makes the webhook's serving
/// certificate (OpenSSL).
///
/// Injection never stops a pod from starting: whatever it cannot do is reported as a warning and
/// the pod is admitted untouched.
