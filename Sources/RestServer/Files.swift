import Foundation
import Hummingbird
import NIOCore

extension RestResponder {
    /// Streams a file (or the requested range of it) without reading it whole.
    func serveFile(_ path: String, request: Request) throws -> Response {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? HTTPFailure(.notFound, "not found") : HTTPFailure(.internalServerError, "cannot open: \(errorText())")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw HTTPFailure(.notFound, "not found")
        }
        let size = Int64(st.st_size)
        var start: Int64 = 0
        var length = size
        var status = HTTPResponse.Status.ok
        var headers: HTTPFields = [.contentType: "application/octet-stream", .acceptRanges: "bytes"]
        if let range = request.headers[.range] {
            guard let (lower, upper) = Self.parseRange(range, size: size) else {
                close(fd)
                headers[.contentRange] = "bytes */\(size)"
                return Response(status: .rangeNotSatisfiable, headers: headers)
            }
            start = lower
            length = upper - lower + 1
            status = .partialContent
            headers[.contentRange] = "bytes \(lower)-\(upper)/\(size)"
        }
        headers[.contentLength] = String(length)
        if request.method == .head {
            close(fd)
            return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(length)) { _ in })
        }
        let (first, end) = (start, start + length)
        let body = ResponseBody(contentLength: Int(length)) { writer in
            defer { close(fd) }
            var offset = first
            while offset < end {
                let count = Int(min(1 << 20, end - offset))
                var buffer = ByteBufferAllocator().buffer(capacity: count)
                let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                    max(0, pread(fd, raw.baseAddress, count, off_t(offset)))
                }
                if n <= 0 { throw HTTPFailure(.internalServerError, "short read") }
                offset += Int64(n)
                try await writer.write(buffer)
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// "bytes=a-b", "bytes=a-" or "bytes=-n" → inclusive bounds inside the file; nil if unsatisfiable.
    static func parseRange(_ header: String, size: Int64) -> (Int64, Int64)? {
        guard header.hasPrefix("bytes="), !header.contains(",") else { return nil }
        let spec = header.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard spec.count == 2 else { return nil }
        if spec[0].isEmpty {
            guard let n = Int64(spec[1]), n > 0, size > 0 else { return nil }
            return (max(0, size - n), size - 1)
        }
        guard let lower = Int64(spec[0]), lower >= 0, lower < size else { return nil }
        if spec[1].isEmpty { return (lower, size - 1) }
        guard let upper = Int64(spec[1]), upper >= lower else { return nil }
        return (lower, min(upper, size - 1))
    }

    /// Streams the request body into a temporary file next to the target, fsyncs it, renames it
    /// into place and fsyncs the directory: a dropped upload leaves nothing visible.
    func receive(_ request: Request, into path: String, type: String) async throws -> Response {
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > configuration.maxRequestSize {
            throw HTTPFailure(.contentTooLarge, "request body larger than \(configuration.maxRequestSize) bytes")
        }
        let dir = (path as NSString).deletingLastPathComponent
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw HTTPFailure(.notFound, "no such repository (create it with POST ?create=true)")
        }
        if configuration.appendOnly && type != "locks" && access(path, F_OK) == 0 {
            throw HTTPFailure(.forbidden, "append-only: the file exists and cannot be replaced")
        }
        let temp = dir + "/.upload-" + UUID().uuidString
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HTTPFailure(.internalServerError, "cannot create a temporary file: \(errorText())") }
        var done = false
        defer {
            close(fd)
            if !done { unlink(temp) }
        }
        var received: Int64 = 0
        for try await var buffer in request.body {
            received += Int64(buffer.readableBytes)
            if received > configuration.maxRequestSize {
                throw HTTPFailure(.contentTooLarge, "request body larger than \(configuration.maxRequestSize) bytes")
            }
            try buffer.readWithUnsafeReadableBytes { raw -> Int in
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw HTTPFailure(.internalServerError, "cannot write: \(errorText())")
                    }
                    offset += n
                }
                return raw.count
            }
        }
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared != received {
            throw HTTPFailure(.badRequest, "body shorter than its Content-Length")
        }
        guard fsync(fd) == 0 else { throw HTTPFailure(.internalServerError, "cannot sync: \(errorText())") }
        guard rename(temp, path) == 0 else { throw HTTPFailure(.internalServerError, "cannot store: \(errorText())") }
        done = true
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
        return Response(status: .ok)
    }

    func list(repo: String, type: String, v2: Bool) throws -> Response {
        let base = repoDir(repo) + "/" + type
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: base, isDirectory: &isDir), isDir.boolValue else {
            throw HTTPFailure(.notFound, "no such repository")
        }
        var dirs = [base]
        if type == "data" { dirs = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).filter { !$0.hasPrefix(".") }.map { base + "/" + $0 } }
        var entries: [(String, Int64)] = []
        for d in dirs {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: d)) ?? [] where isObjectName(name) {
                var st = stat()
                if stat(d + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG { entries.append((name, Int64(st.st_size))) }
            }
        }
        let json: String
        if v2 {
            json = "[" + entries.map { "{\"name\":\"\($0.0)\",\"size\":\($0.1)}" }.joined(separator: ",") + "]"
        } else {
            json = "[" + entries.map { "\"\($0.0)\"" }.joined(separator: ",") + "]"
        }
        return Response(status: .ok, headers: [.contentType: v2 ? Self.v2 : "application/vnd.x.restic.rest.v1"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }
}
