import COpenSSL

/// SHA-256 through OpenSSL, only to key the cache of verified passwords without keeping them.
enum SHA256 {
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let ok = message.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { chb_sha256(input.baseAddress, input.count, $0.baseAddress) }
        }
        precondition(ok == 1, "OpenSSL SHA-256 failed")
        return out
    }

    static func hex(_ message: [UInt8]) -> String {
        hash(message).map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
    }
}
