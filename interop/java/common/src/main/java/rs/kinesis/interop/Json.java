package rs.kinesis.interop;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

/** Minimal JSON-lines output, one object per line, on stdout (no JSON library needed). */
final class Json {
    private static final BufferedWriter OUT =
            new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 16);

    private final StringBuilder sb = new StringBuilder("{");

    static Json event(String event) {
        return new Json().str("event", event).num("t", System.currentTimeMillis());
    }

    Json str(String key, String value) {
        key(key);
        if (value == null) {
            sb.append("null");
        } else {
            quote(value);
        }
        return this;
    }

    Json num(String key, long value) {
        key(key);
        sb.append(value);
        return this;
    }

    Json bool(String key, boolean value) {
        key(key);
        sb.append(value);
        return this;
    }

    Json bytes(String key, byte[] value) {
        return str(key, Base64.getEncoder().encodeToString(value));
    }

    private void key(String key) {
        if (sb.length() > 1) {
            sb.append(',');
        }
        quote(key);
        sb.append(':');
    }

    private void quote(String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        sb.append('"');
    }

    /** Writes the line (buffered; see {@link #flush}). */
    void emit() {
        sb.append('}');
        synchronized (OUT) {
            try {
                OUT.write(sb.toString());
                OUT.write('\n');
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    /** Writes the line and flushes stdout. */
    void emitNow() {
        emit();
        flush();
    }

    static void flush() {
        synchronized (OUT) {
            try {
                OUT.flush();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }
}
