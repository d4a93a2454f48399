package objstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cloud-block/cloud-block/common/config"
)

// MaxPrefix bounds <PREFIX>_PREFIX: the object stores limit keys to 1024
// bytes, and the rest of the key needs room.
const MaxPrefix = 512

// Vars declares the variables of a service whose prefix is e.g. "AWS_S3":
// AWS_S3_OBJECT_MODE, AWS_S3_GZIP, AWS_S3_PREFIX and AWS_S3_KEY_TEMPLATE.
func Vars(prefix string) []config.Var {
	return []config.Var{
		{Name: prefix + "_OBJECT_MODE", Default: string(Batch),
			Doc: "How messages become objects: `batch` writes one NDJSON object per batch, `message` writes each payload unchanged as an object of its own."},
		{Name: prefix + "_GZIP", Default: "false",
			Doc: "Gzip batch objects (key ending `.ndjson.gz`, Content-Encoding `gzip`); batch mode only."},
		{Name: prefix + "_PREFIX",
			Doc: "Prepended to every object key, with a `/` added if it does not end in one; at most 512 bytes."},
		{Name: prefix + "_KEY_TEMPLATE",
			Doc: "Object key without extension, from the placeholders {device} {topic} {yyyy} {mm} {dd} {hh} {first} {last} {id}; empty means `" + DefaultBatchTemplate + "` in batch mode and `" + DefaultMessageTemplate + "` in message mode."},
	}
}

// Load reads the variables declared by Vars(prefix) and validates them,
// recording every problem in l under the variable's name.
func Load(l *config.Loader, prefix, device string) Options {
	modeVar, gzipVar, tmplVar := prefix+"_OBJECT_MODE", prefix+"_GZIP", prefix+"_KEY_TEMPLATE"
	o := Options{
		Mode:     Mode(l.Enum(modeVar, string(Batch), string(PerMessage))),
		Gzip:     l.Bool(gzipVar),
		Prefix:   strings.TrimSpace(l.String(prefix + "_PREFIX")),
		Template: strings.TrimSpace(l.String(tmplVar)),
		Device:   device,
	}
	if len(o.Prefix) > MaxPrefix {
		l.Fail(prefix+"_PREFIX", o.Prefix, fmt.Sprintf("at most %d bytes, so that keys stay within the 1024-byte limit of S3, Azure Blob and Cloud Storage", MaxPrefix))
	}
	if o.Gzip && o.Mode == PerMessage {
		l.Fail(gzipVar, l.Optional(gzipVar), "false when "+modeVar+" is message, which stores each payload unchanged")
	}
	t, err := compile(o.Template, o.Mode)
	if err != nil {
		var te *templateError
		if errors.As(err, &te) {
			l.Fail(tmplVar, l.Optional(tmplVar), te.want)
		}
	} else if fixed := len(o.Prefix) + 1 + t.fixedBytes() + len(extNDJSONGzip); fixed > MaxKeyBytes {
		// Every key would be too long, and every batch dead-lettered.
		l.Fail(tmplVar, l.Optional(tmplVar), fmt.Sprintf("a template whose fixed text, with %s_PREFIX, leaves room in the %d bytes a key may have (they take %d)", prefix, MaxKeyBytes, fixed))
	}
	return o
}
