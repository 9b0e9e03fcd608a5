import Foundation
import Storage

extension Restorer {
    /// Writes a stream (or a file's content) to `fd` in order, fetching runs of neighbouring
    /// blobs with one request each, several runs at a time.
    public func restoreStream(_ node: Node, to fd: Int32, name: String) async throws -> Int64 {
        let content = try await repo.chunks(of: node)
        var runs: [(PackID, [BlobLocation])] = []
        for id in content {
            guard let location = repo.index.lookup(id) else {
                throw RepositoryError(.missing, "blob \(id) of \(name) is not in the index: the repository is damaged")
            }
            // A run is capped by its decompressed size: a highly compressible dump (pgbench
            // data packs 19:1) must not turn an 8 MiB download into 150 MiB in memory.
            if let last = runs.last, last.0 == location.pack, let prev = last.1.last,
               prev.blob.offset + prev.blob.length == location.blob.offset,
               last.1.reduce(0, { $0 + Int($1.blob.rawLength) }) + Int(location.blob.rawLength) <= 8 << 20 {
                runs[runs.count - 1].1.append(location)
            } else {
                runs.append((location.pack, [location]))
            }
        }
        progress.setTotal(node.size)
        var written: Int64 = 0
        let window = max(1, options.connections)
        try await withThrowingTaskGroup(of: (Int, [Data]).self) { group in
            var ready: [Int: [Data]] = [:]
            var next = 0
            var emitted = 0
            func launch() {
                guard next < runs.count else { return }
                let (index, run) = (next, runs[next])
                next += 1
                group.addTask {
                    let (base, data, whole) = try await self.loadSpan(run.0, run.1)
                    let plains = try data.withUnsafeBytes { raw in
                        try run.1.map { location in
                            let start = Int(Int64(location.blob.offset) - base)
                            return try self.repo.openBlob(
                                UnsafeRawBufferPointer(rebasing: raw[start..<(start + Int(location.blob.length))]), location,
                                checkID: self.checksIDs(whole: whole))
                        }
                    }
                    return (index, plains)
                }
            }
            for _ in 0..<window { launch() }
            while let (index, plains) = try await group.next() {
                ready[index] = plains
                while let chunk = ready.removeValue(forKey: emitted) {
                    for plain in chunk {
                        do {
                            try writeAll(fd, plain, path: name)
                        } catch {
                            throw RepositoryError(.io, "cannot write \(name): \(error)")
                        }
                        written += Int64(plain.count)
                        progress.add(bytes: Int64(plain.count))
                    }
                    emitted += 1
                    launch()
                }
            }
        }
        guard written == node.size else {
            throw RepositoryError(.corrupted, "\(name): restored \(written) bytes, the snapshot says \(node.size)")
        }
        return written
    }
}
