import Foundation
import Logging
import NIOCore
import Testing
import TestSupport
@testable import RestServer

@Suite struct SHA256Tests {
    @Test func sha256MatchesKnownVectors() {
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }
}

/// Downloads reuse their send buffers once the channel has let them go, and never while it still
/// holds them; the pool keeps no more than its limit.
@Suite struct SendBufferTests {
    static func base(_ buffer: ByteBuffer) -> UInt {
        buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func buffersAreReusedOnlyOnceReleased() {
        let pool = SendBuffers(limit: 4)
        // Handed to the channel (`inFlight`) and kept: a take while the channel holds it gets
        // other storage, and the bytes being sent stay as they were.
        var first = pool.take()
        #expect(first.readableBytes == 0 && first.capacity >= SendBuffers.size)
        first.writeBytes([1, 2, 3])
        let firstBase = Self.base(first)
        pool.give(first)
        var inFlight: ByteBuffer? = first
        first = ByteBuffer()
        var second = pool.take()
        second.writeBytes([9, 9])
        #expect(Self.base(second) != firstBase)
        #expect(inFlight.map { Array($0.readableBytesView) } == [1, 2, 3])
        pool.give(second)
        #expect(pool.count == 2)
        // The channel has sent it: the next take reuses its storage, emptied.
        inFlight = nil
        var again = pool.take()
        #expect(again.readableBytes == 0)
        again.writeBytes([4])
        #expect(Self.base(again) == firstBase)
        #expect(pool.count == 1)
    }

    @Test func thePoolKeepsNoMoreThanItsLimit() {
        let pool = SendBuffers(limit: 2)
        let taken = (0..<3).map { _ in pool.take() }
        for buffer in taken { pool.give(buffer) }
        #expect(pool.count == 2)
    }
}

/// The sweep keeps the temporary file of a live upload of this process and removes this
/// process's others; it does not follow links.
@Suite struct UploadSweepTests {
    @Test func keepsLiveUploadsAndNeverFollowsLinks() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir.file("root/r/keys"), withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir.file("outside"), withIntermediateDirectories: true)
        let uploads = Uploads()
        let live = uploads.begin(), finished = uploads.begin()
        uploads.end(finished)
        let outsider = ".upload-\(getpid())-\(UUID().uuidString)"
        for name in [live, finished] { _ = fm.createFile(atPath: dir.file("root/r/keys/") + name, contents: Data()) }
        _ = fm.createFile(atPath: dir.file("outside/") + outsider, contents: Data())
        try fm.createSymbolicLink(atPath: dir.file("root/r/link"), withDestinationPath: dir.file("outside"))
        var logger = Logger(label: "t")
        logger.logLevel = .critical
        #expect(uploads.sweep(try RootDirectory(path: dir.file("root")), logger: logger) == 1)
        #expect(fm.fileExists(atPath: dir.file("root/r/keys/") + live))
        #expect(!fm.fileExists(atPath: dir.file("root/r/keys/") + finished))
        #expect(fm.fileExists(atPath: dir.file("outside/") + outsider))
    }
}
