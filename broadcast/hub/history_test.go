package hub_test

import (
	"testing"

	"github.com/fanout/fanout/broadcast/history"
	"github.com/fanout/fanout/broadcast/hub"
)

func historyOf(testing.TB) hub.History { return history.New(history.Config{}) }
