// Command peek-blob is the demo's reader for Azure Blob Storage: it creates
// the container, then prints each new blob (decoded, as show.Arrival JSON
// lines) until SIGTERM. The demo runs it beside Azurite.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
)

func main() {
	conn := flag.String("conn", "", "connection string")
	container := flag.String("container", "", "container to create and watch")
	every := flag.Duration("every", time.Second, "time between listings")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *conn, *container, *every); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "peek-blob:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, conn, container string, every time.Duration) error {
	c, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = c.CreateContainer(cctx, container, nil)
	cancel()
	var re *azcore.ResponseError
	if err != nil && !(errors.As(err, &re) && re.ErrorCode == "ContainerAlreadyExists") {
		return fmt.Errorf("create container: %w", err)
	}
	fmt.Println(show.Ready)
	seen := map[string]bool{}
	for {
		if err := list(ctx, c, container, seen); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "peek-blob: list:", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

func list(ctx context.Context, c *azblob.Client, container string, seen map[string]bool) error {
	pager := c.NewListBlobsFlatPager(container, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, item := range page.Segment.BlobItems {
			name := *item.Name
			if seen[name] {
				continue
			}
			resp, err := c.DownloadStream(ctx, container, name, nil)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			seen[name] = true
			if err := show.Emit(os.Stdout, show.Object(container+"/"+name, body)); err != nil {
				return err
			}
		}
	}
	return nil
}
