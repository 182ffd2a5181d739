package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/hotplug-agent/hotplug-agent/client"
	"github.com/hotplug-agent/hotplug-agent/notify"
)

// A program that follows the processors of the agent on this machine until Ctrl-C: first the
// CPUs online now, then every arrival and removal, across disconnections and agent restarts.
func Example() {
	c, err := client.New("http://localhost:19100", client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reg, err := c.Register(client.Filter{Class: notify.GUIDDeviceProcessor}, notify.FlagIncludeExistingInterfaces,
		func(ctx context.Context, n notify.Notification) error {
			fmt.Printf("%s cpu %d (%s, id %d)\n", notify.EventName(n.Event), n.Interface.Number, n.Cause, n.ID)
			return nil
		})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	<-ctx.Done()
	// When UnregisterEx returns, no callback of reg runs any more.
	if err := c.UnregisterEx(context.Background(), reg); err != nil {
		log.Print(err)
	}
}
