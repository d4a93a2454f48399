package objstore

// validJSON reports whether p is one JSON value (RFC 8259) with optional
// surrounding whitespace, accepting exactly what json.Valid accepts (a
// differential fuzz test holds it to that), including its nesting limit.
//
// Why not json.Valid: it drives a general scanner through a function call
// per byte and was three quarters of Build's time on 200-byte payloads; this
// single pass without allocation is several times faster. Like json.Valid it
// does not check UTF-8 inside strings; callers do that with utf8.Valid.
func validJSON(p []byte) bool {
	// kinds has one bit per open container: 1 for an object, 0 for an array.
	// The inline array covers any sane depth without allocating (and without
	// clearing 1.25 KiB per call); deeper input grows it on the heap.
	var inline [4]uint64
	kinds := inline[:]
	depth := 0
	i := skipSpace(p, 0)
value:
	for {
		if i >= len(p) {
			return false
		}
		switch c := p[i]; c {
		case '{', '[':
			if depth == maxDepth {
				return false
			}
			if depth/64 == len(kinds) {
				kinds = append(kinds, 0)
			}
			if c == '{' {
				kinds[depth/64] |= 1 << (depth % 64)
			} else {
				kinds[depth/64] &^= 1 << (depth % 64)
			}
			depth++
			i = skipSpace(p, i+1)
			if i < len(p) && p[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				i++
				depth--
				break
			}
			if c == '{' {
				if i = skipKey(p, i); i < 0 {
					return false
				}
			}
			continue value
		case '"':
			i = skipString(p, i)
		case 't':
			i = skipLiteral(p, i, "true")
		case 'f':
			i = skipLiteral(p, i, "false")
		case 'n':
			i = skipLiteral(p, i, "null")
		default:
			i = skipNumber(p, i)
		}
		if i < 0 {
			return false
		}
		// After a value: close containers until a comma asks for the next.
		for {
			i = skipSpace(p, i)
			if depth == 0 {
				return i == len(p)
			}
			if i >= len(p) {
				return false
			}
			inObject := kinds[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			switch c := p[i]; {
			case c == ',':
				i = skipSpace(p, i+1)
				if inObject {
					if i = skipKey(p, i); i < 0 {
						return false
					}
				}
				continue value
			case inObject && c == '}', !inObject && c == ']':
				i++
				depth--
			default:
				return false
			}
		}
	}
}

// maxDepth is encoding/json's nesting limit: deeper input is not valid to it,
// so Decode could not read such a payload back.
const maxDepth = 10000

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// skipKey skips `"name" :` and the space after it; -1 if p[i:] is not that.
func skipKey(p []byte, i int) int {
	if i >= len(p) || p[i] != '"' {
		return -1
	}
	if i = skipString(p, i); i < 0 {
		return -1
	}
	i = skipSpace(p, i)
	if i >= len(p) || p[i] != ':' {
		return -1
	}
	return skipSpace(p, i+1)
}

// plain marks the bytes a string holds as they are: not '"', '\\' or a
// control character. A table lookup keeps the common path one branch.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// skipString skips the string starting at p[i] == '"'.
func skipString(p []byte, i int) int {
	for i++; i < len(p); {
		for i < len(p) && plain[p[i]] {
			i++
		}
		if i >= len(p) {
			return -1
		}
		c := p[i]
		switch {
		case c == '"':
			return i + 1
		case c != '\\':
			return -1 // a control character
		case i+1 >= len(p):
			return -1
		default:
			switch p[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(p) || !isHex(p[i+2]) || !isHex(p[i+3]) || !isHex(p[i+4]) || !isHex(p[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		}
	}
	return -1
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func skipLiteral(p []byte, i int, lit string) int {
	if len(p)-i < len(lit) || string(p[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipNumber skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(p []byte, i int) int {
	if i < len(p) && p[i] == '-' {
		i++
	}
	switch {
	case i >= len(p):
		return -1
	case p[i] == '0':
		i++
	case '1' <= p[i] && p[i] <= '9':
		i = skipDigits(p, i+1)
	default:
		return -1
	}
	if i < len(p) && p[i] == '.' {
		j := skipDigits(p, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		j := skipDigits(p, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func skipDigits(p []byte, i int) int {
	for i < len(p) && '0' <= p[i] && p[i] <= '9' {
		i++
	}
	return i
}
