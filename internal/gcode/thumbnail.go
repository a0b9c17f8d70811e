package gcode

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strconv"
)

// ImageFormat is a thumbnail's encoding as the slicer declares it.
type ImageFormat string

// Thumbnail encodings slicers embed.
const (
	FormatPNG ImageFormat = "PNG"
	FormatJPG ImageFormat = "JPG"
	FormatQOI ImageFormat = "QOI"
)

// Thumbnail is one preview image embedded in the G-code.
type Thumbnail struct {
	Width  int         `json:"width"`
	Height int         `json:"height"`
	Format ImageFormat `json:"format"`
	Data   []byte      `json:"-"` // the decoded image file (PNG, JPEG or QOI bytes)
}

// thumbDecoder decodes one "; thumbnail begin WxH N" … "; thumbnail end"
// block (or thumbnail_JPG / thumbnail_QOI) line by line as it streams past.
type thumbDecoder struct {
	thumb   Thumbnail
	endTag  []byte // "thumbnail end" or "thumbnail_JPG end", …
	stated  int    // base64 characters announced on the begin line; -1 if none
	chars   int    // base64 characters seen
	quad    []byte // base64 characters not yet decoded (fewer than 4)
	padded  bool   // a '=' ended the data; more data makes it invalid
	invalid bool   // over a cap, bad base64 or a truncated line: skip it at the end
}

// thumbnailBegin parses "[_FMT] begin WxH [N]", the rest of a comment
// "thumbnail[_FMT] begin WxH [N]". ok is false when it is not a begin line.
func thumbnailBegin(rest []byte) (d *thumbDecoder, ok bool) {
	format := FormatPNG
	tag := "thumbnail"
	if f, r, ok := bytes.Cut(rest, []byte(" begin ")); ok && len(f) > 0 && f[0] == '_' {
		switch string(f[1:]) {
		case "PNG":
			format = FormatPNG
		case "JPG":
			format = FormatJPG
		case "QOI":
			format = FormatQOI
		default:
			return nil, false
		}
		tag += string(f)
		rest = r
	} else if r, ok := bytes.CutPrefix(rest, []byte(" begin ")); ok {
		rest = r
	} else {
		return nil, false
	}
	fields := bytes.Fields(rest)
	if len(fields) < 1 {
		return nil, false
	}
	ws, hs, ok := bytes.Cut(fields[0], []byte("x"))
	if !ok {
		return nil, false
	}
	w, err1 := strconv.Atoi(string(ws))
	h, err2 := strconv.Atoi(string(hs))
	if err1 != nil || err2 != nil || w <= 0 || h <= 0 || w > 1<<14 || h > 1<<14 {
		return nil, false
	}
	d = &thumbDecoder{
		thumb:  Thumbnail{Width: w, Height: h, Format: format},
		endTag: []byte(tag + " end"),
		stated: -1,
	}
	if len(fields) >= 2 {
		if n, err := strconv.Atoi(string(fields[1])); err == nil && n >= 0 {
			d.stated = n
		}
	}
	return d, true
}

// data decodes one line of base64. maxBytes is what this thumbnail may still
// grow to under the per-thumbnail and total caps.
func (d *thumbDecoder) data(t []byte, truncated bool, maxBytes int) {
	if d.invalid {
		return
	}
	if truncated || d.padded {
		d.fail()
		return
	}
	d.chars += len(t)
	if d.stated >= 0 && d.chars > d.stated {
		d.fail()
		return
	}
	d.quad = append(d.quad, t...)
	whole := len(d.quad) / 4 * 4
	if whole == 0 {
		return
	}
	if len(d.thumb.Data)+whole/4*3 > maxBytes {
		d.fail()
		return
	}
	if d.thumb.Data == nil && d.stated > 0 {
		d.thumb.Data = make([]byte, 0, min(d.stated/4*3, maxBytes))
	}
	start := len(d.thumb.Data)
	d.thumb.Data = slices.Grow(d.thumb.Data, whole/4*3)[:start+whole/4*3]
	n, err := base64.StdEncoding.Decode(d.thumb.Data[start:], d.quad[:whole])
	if err != nil {
		d.fail()
		return
	}
	d.thumb.Data = d.thumb.Data[:start+n]
	d.padded = d.quad[whole-1] == '='
	d.quad = append(d.quad[:0], d.quad[whole:]...)
}

func (d *thumbDecoder) fail() {
	d.invalid = true
	d.thumb.Data = nil
	d.quad = nil
}

// finish checks the decoded image: every announced character arrived, no
// base64 is left over, and the image header agrees with the declared format
// and, where the header carries it, with the declared size.
func (d *thumbDecoder) finish() (Thumbnail, bool) {
	if d.invalid || len(d.quad) != 0 || (d.stated >= 0 && d.chars != d.stated) || len(d.thumb.Data) == 0 {
		return Thumbnail{}, false
	}
	b := d.thumb.Data
	switch d.thumb.Format {
	case FormatPNG:
		// Signature, then the IHDR chunk: length, "IHDR", width, height.
		if len(b) < 24 || string(b[:8]) != "\x89PNG\r\n\x1a\n" || string(b[12:16]) != "IHDR" ||
			binary.BigEndian.Uint32(b[16:]) != uint32(d.thumb.Width) ||
			binary.BigEndian.Uint32(b[20:]) != uint32(d.thumb.Height) {
			return Thumbnail{}, false
		}
	case FormatQOI:
		if len(b) < 14 || string(b[:4]) != "qoif" ||
			binary.BigEndian.Uint32(b[4:]) != uint32(d.thumb.Width) ||
			binary.BigEndian.Uint32(b[8:]) != uint32(d.thumb.Height) {
			return Thumbnail{}, false
		}
	case FormatJPG:
		if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 || b[2] != 0xFF {
			return Thumbnail{}, false
		}
	}
	return d.thumb, true
}
