package bench

import (
	"errors"
	"fmt"
)

// errStreamEnded is returned by chunkDecoder.feed at the last chunk: the
// server ended the response.
var errStreamEnded = errors.New("server ended the stream (last chunk)")

// chunkDecoder states.
const (
	chunkSize   = iota // reading the hex size
	chunkExt           // skipping a chunk extension up to LF
	chunkSizeLF        // after CR of the size line
	chunkData          // inside chunk data
	chunkDataCR        // expecting CR after data
	chunkDataLF        // expecting LF after data
	chunkDone          // after the last chunk
)

// maxChunk bounds a chunk size so that parsing cannot overflow.
const maxChunk = 1 << 40

// chunkDecoder incrementally removes HTTP/1.1 chunked framing from a body
// read in arbitrary pieces, without allocating. A decoder with chunked set
// to false passes the body through.
type chunkDecoder struct {
	chunked   bool
	state     uint8
	digits    bool  // a size digit was seen
	remaining int64 // size of the chunk, then bytes of it left
}

// feed decodes raw and hands every piece of body to p, read at now. It
// returns errStreamEnded at the last chunk and an error for bad framing.
func (d *chunkDecoder) feed(raw []byte, p *Parser, now int64) error {
	if !d.chunked {
		p.Feed(raw, now)
		return nil
	}
	for len(raw) > 0 {
		if d.state == chunkData {
			n := min(int64(len(raw)), d.remaining)
			p.Feed(raw[:n], now)
			raw = raw[n:]
			if d.remaining -= n; d.remaining == 0 {
				d.state = chunkDataCR
			}
			continue
		}
		if err := d.framing(raw[0]); err != nil {
			return err
		}
		raw = raw[1:]
	}
	return nil
}

// framing consumes one byte outside chunk data.
func (d *chunkDecoder) framing(c byte) error {
	switch d.state {
	case chunkSize:
		if v, ok := hexValue(c); ok {
			if d.remaining >= maxChunk {
				return errors.New("chunk size too large")
			}
			d.remaining = d.remaining<<4 | int64(v)
			d.digits = true
			return nil
		}
		if !d.digits {
			return fmt.Errorf("bad chunk size byte %q", c)
		}
		switch c {
		case ';', ' ', '\t':
			d.state = chunkExt
		case '\r':
			d.state = chunkSizeLF
		case '\n':
			return d.sizeLineDone()
		default:
			return fmt.Errorf("bad chunk size byte %q", c)
		}
	case chunkExt:
		if c == '\n' {
			return d.sizeLineDone()
		}
	case chunkSizeLF:
		if c != '\n' {
			return fmt.Errorf("bad chunk size line: %q after CR", c)
		}
		return d.sizeLineDone()
	case chunkDataCR:
		switch c {
		case '\r':
			d.state = chunkDataLF
		case '\n':
			d.state = chunkSize
		default:
			return fmt.Errorf("chunk data not followed by CRLF: %q", c)
		}
	case chunkDataLF:
		if c != '\n' {
			return fmt.Errorf("chunk data not followed by CRLF: %q", c)
		}
		d.state = chunkSize
	case chunkDone:
		return errStreamEnded
	}
	return nil
}

// sizeLineDone starts the chunk whose size line just ended.
func (d *chunkDecoder) sizeLineDone() error {
	d.digits = false
	if d.remaining == 0 {
		d.state = chunkDone
		return errStreamEnded
	}
	d.state = chunkData
	return nil
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
