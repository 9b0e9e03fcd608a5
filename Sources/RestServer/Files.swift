import Foundation
import Hummingbird
import NIOCore
import Storage
import Synchronization

extension RestResponder {
    /// Streams a file (or the requested range of it) without reading it whole. With
    /// `releasingCache` (packs) its pages leave the page cache behind the reads, as they do once
    /// received (see `receive`): a pack is fetched to be restored or checked, once.
    func serveFile(_ location: Location, request: Request, releasingCache: Bool = false) throws -> Response {
        let (fd, code) = try rootDirectory.withDirectory(location.directory) { dir in
            (openat(dir, location.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), errno)
        }
        guard fd >= 0 else {
            throw code == ENOENT || code == ELOOP ? HTTPFailure(.notFound, "not found") : HTTPFailure(.internalServerError, "cannot open: \(errorText(code))")
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
            var offset = first
            var behind = releasingCache ? ReadBehind(fd, range: first..<end) : nil
            defer {
                behind?.finish(at: offset)
                close(fd)
            }
            while offset < end {
                let count = Int(min(Int64(SendBuffers.size), end - offset))
                var buffer = sendBuffers.take()
                let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                    max(0, pread(fd, raw.baseAddress, count, off_t(offset)))
                }
                if n <= 0 { throw HTTPFailure(.internalServerError, "short read") }
                offset += Int64(n)
                // The last piece's pages go before it is sent (ReadBehind drops at the end of its
                // range): once the client has every byte, none of the pack is cached here.
                behind?.consumed(upTo: offset)
                sendBuffers.give(buffer)
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

    /// Streams the request body into a temporary file next to the target, fsyncs it, places it
    /// under its name and fsyncs the directory: a dropped upload leaves nothing visible. Where
    /// append-only protects the file, and always for `config`, the placement is link(2), which
    /// fails if the name exists: checking and placing are one step, so an upload that began
    /// before the file appeared cannot replace it. Elsewhere it is rename(2), which replaces as
    /// restic expects.
    func receive(_ request: Request, into location: Location, type: String) async throws -> Response {
        if let declared = request.headers[.contentLength].flatMap({ Int64($0) }), declared > configuration.maxRequestSize {
            throw HTTPFailure(.contentTooLarge, "request body larger than \(configuration.maxRequestSize) bytes")
        }
        let dir: Int32
        do {
            dir = try rootDirectory.openDirectory(location.directory)
        } catch let failure as HTTPFailure where failure.status == .notFound {
            throw HTTPFailure(.notFound, "no such repository (create it with POST ?create=true)")
        }
        defer { close(dir) }
        // A repository's config is never replaced (restic's rest-server refuses it too): two
        // clients creating one repository at once cannot both succeed with different keys.
        let createOnly = type == "config" || (configuration.appendOnly && type != "locks")
        let refusal = type == "config" ? Self.configRefusal : Self.appendOnlyRefusal
        var existing = stat()
        if createOnly && fstatat(dir, location.name, &existing, AT_SYMLINK_NOFOLLOW) == 0 {
            throw refusal
        }
        let temp = uploads.begin()
        defer { uploads.end(temp) }
        let fd = openat(dir, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HTTPFailure(.internalServerError, "cannot create a temporary file: \(errorText())") }
        var renamed = false
        defer {
            close(fd)
            if !renamed { unlinkat(dir, temp, 0) }
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
        // Packs leave the page cache once on disk (syncFile): the next upload reuses their pages.
        guard syncFile(fd, releasingCache: type == "data") else { throw HTTPFailure(.internalServerError, "cannot sync: \(errorText())") }
        await configuration.hooks.beforePlacement?(location.name)
        if createOnly {
            // The temporary name is removed by the defer once the file has its own.
            guard linkat(dir, temp, dir, location.name, 0) == 0 else {
                if errno == EEXIST { throw refusal }
                throw HTTPFailure(.internalServerError, "cannot store: \(errorText())")
            }
        } else {
            guard renameat(dir, temp, dir, location.name) == 0 else { throw HTTPFailure(.internalServerError, "cannot store: \(errorText())") }
            renamed = true
        }
        fsync(dir)
        return Response(status: .ok)
    }

    static let appendOnlyRefusal = HTTPFailure(.forbidden, "append-only: the file exists and cannot be replaced")
    static let configRefusal = HTTPFailure(.forbidden, "the repository's config exists and is never replaced")

    func list(repo: String, type: String, v2: Bool) throws -> Response {
        let entries = try rootDirectory.withDirectory(repoComponents(repo) + [type]) { base in
            guard type == "data" else { return try objects(in: base) }
            var entries: [(String, Int64)] = []
            for sub in try directoryEntries(base) where sub.isDirectory && !sub.name.hasPrefix(".") {
                let dir = openSubdirectory(base, sub.name)
                guard dir >= 0 else { continue }
                defer { close(dir) }
                entries += try objects(in: dir)
            }
            return entries
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

    /// The regular files with object names in `dir` (links are skipped), with their sizes.
    private func objects(in dir: Int32) throws -> [(String, Int64)] {
        try directoryEntries(dir).compactMap { entry in
            guard entry.isRegularFile, isObjectName(entry.name) else { return nil }
            var st = stat()
            guard fstatat(dir, entry.name, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
            return (entry.name, Int64(st.st_size))
        }
    }
}

/// The buffers files are sent through, shared by every response. A new buffer for every MiB
/// sent cost the server a page fault for every other page it read (a fifth of its CPU time while
/// serving a restore), as freed buffers went back to the kernel; kept ones stay mapped. A buffer
/// is kept from the moment it is handed to the channel, and taken again only once the channel
/// has let go of it (`modifyIfUniquelyOwned`), so no byte is overwritten before it is sent.
final class SendBuffers: Sendable {
    static let size = 1 << 20
    let limit: Int
    private let buffers = Mutex<[ByteBuffer]>([])

    init(limit: Int) { self.limit = limit }

    /// An empty buffer of at least `size` bytes: a kept one that nobody else holds any more, or a
    /// new one.
    func take() -> ByteBuffer {
        let kept: ByteBuffer? = buffers.withLock { kept in
            for i in kept.indices where kept[i].modifyIfUniquelyOwned({ $0.clear() }) != nil {
                return kept.remove(at: i)
            }
            return nil
        }
        return kept ?? ByteBufferAllocator().buffer(capacity: Self.size)
    }

    /// Keeps `buffer` (which the channel may still be sending) for a later `take`, unless `limit`
    /// buffers are kept already.
    func give(_ buffer: ByteBuffer) {
        buffers.withLock { if $0.count < limit { $0.append(buffer) } }
    }

    /// How many buffers are kept, in use by a channel or not.
    var count: Int { buffers.withLock { $0.count } }
}
