// Command kingpinlike stands for a hotplug-agent that prints its man page and shell completions
// as kingpin does (--help-man, --completion-script-bash, --completion-script-zsh), with kingpin's
// empty first line before the zsh script's #compdef.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	switch os.Args[1] {
	case "--help-man":
		fmt.Print(".TH hotplug-agent 1 test \"\"\n.SH \"NAME\"\nhotplug-agent \\- test\n")
	case "--completion-script-bash":
		fmt.Print("\n_hotplug-agent_bash_autocomplete() { :; }\ncomplete -F _hotplug-agent_bash_autocomplete -o default hotplug-agent\n")
	case "--completion-script-zsh":
		fmt.Print("\n#compdef hotplug-agent\n_hotplug-agent() { :; }\n")
	default:
		os.Exit(2)
	}
}
