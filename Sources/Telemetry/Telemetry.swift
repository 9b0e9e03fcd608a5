/// Telemetry: Prometheus metrics for the long-running commands (`chebackup controller`,
/// `chebackup rest-server`). Libraries report through swift-metrics (`Counter`, `Gauge`, `Timer`)
/// and never bootstrap it; an executable given `--metrics-listen` bootstraps swift-metrics with
/// swift-prometheus's factory once and serves the registry's text exposition at `GET /metrics`.
/// The metrics (README, "Metrics"): `chebackup_operations_total{kind,outcome}`,
/// `chebackup_operation_duration_seconds{kind}`, `chebackup_read_bytes_total`,
/// `chebackup_stored_bytes_total`, `chebackup_repository_size_bytes{repository}`,
/// `chebackup_repository_snapshots{repository}`,
/// `chebackup_schedule_last_success_timestamp_seconds{schedule}`,
/// `chebackup_rest_requests_total{method,status}`.
import Hummingbird
import Logging
import Metrics
import Prometheus

public enum Telemetry {
    /// Bootstraps swift-metrics with a Prometheus registry; returns the registry to serve.
    public static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [.seconds(1), .seconds(5), .seconds(15), .seconds(30), .seconds(60), .seconds(120),
                                                   .seconds(300), .seconds(600), .seconds(1800), .seconds(3600), .seconds(7200)]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// Serves `GET /metrics` (and `/healthz`) until cancelled.
    public static func serve(_ registry: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger,
                             onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        router.get("/healthz") { _, _ in "ok\n" }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "chebackup-metrics"),
                              onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) }, logger: logger)
        try await app.runService()
    }
}
